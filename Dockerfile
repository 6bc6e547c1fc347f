# The `sedna` binary in a small image: what deploy/controller.yaml, deploy/agent.yaml and
# the jobs' Pods (`sedna worker ...`) run. ONNX models run on the pure-Rust backend here;
# add ONNX Runtime (pip install onnxruntime) to the image to use it instead.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# rust-toolchain.toml pins the toolchain and the wasm32-wasip2 target the built-in
# plugins compile to.
RUN cargo build --release -p sedna && cp target/release/sedna /sedna

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /sedna /usr/local/bin/sedna
ENTRYPOINT []
CMD ["sedna", "--help"]
