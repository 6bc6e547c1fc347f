fn main() -> std::process::ExitCode {
    // SAFETY: the first thing the process does; no other thread exists yet.
    unsafe { sedna::threads::settle_thread_count() };
    sedna::cli::main()
}
