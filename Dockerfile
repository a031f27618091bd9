# Multi-stage build of the `commentary` binary.
#   docker build -t commentary .
#   docker run --rm -v commentary-data:/data commentary dataset inspect /data/mnist
# GPU backends are cargo features: add `--build-arg FEATURES=wgpu` (or `cuda` on a CUDA base).

FROM rust:1.95-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin commentary \
    ${FEATURES:+--features server/$FEATURES} \
 && cp target/release/commentary /usr/local/bin/commentary

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin commentary \
 && mkdir -p /data \
 && chown commentary:commentary /data
COPY --from=build /usr/local/bin/commentary /usr/local/bin/commentary
COPY fixtures/mnist /usr/share/commentary/fixtures/mnist
USER commentary
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# In a container the registry listens on all interfaces, so writes need a token
# (`docker exec <container> commentary token create --scope admin`).
ENV COMMENTARY_ADDR=0.0.0.0:8080 COMMENTARY_DATA_DIR=/data
ENTRYPOINT ["commentary"]
CMD ["serve"]
