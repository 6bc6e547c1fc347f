fn main() -> std::process::ExitCode {
    sedna::cli::main()
}
