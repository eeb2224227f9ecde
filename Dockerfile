# One small image for the three binaries: static (musl) builds on a scratch base, running
# as a non-root user. Build: docker build -t ghcr.io/verifyfull/verifyfull:0.1.0 .
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p verifyfull-webhook -p verifyfull-operator -p verifyfull-cli \
 && mkdir /out \
 && cp target/release/verifyfull-webhook target/release/verifyfull-operator target/release/verifyfull /out/

FROM scratch
COPY --from=build /out/ /
# Non-root (the chart also sets runAsUser 65532 and a read-only root filesystem).
USER 65532:65532
ENTRYPOINT ["/verifyfull-webhook"]
