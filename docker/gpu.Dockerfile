# Model services on NVIDIA GPUs: llm_message / llm_memory / llm_summary / llm_pose / llm (consolidated) / face.
# Build:  docker build -f docker/gpu.Dockerfile -t ohlora-services:gpu .
# Weights are not in the image: mount the models folder (`ohlora models pull --dir ...`) at /models.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/ohlora
# The same torch pin as the Makefile, from the CUDA 12.8 wheel index (the CPU image uses the CPU index).
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN /opt/ohlora/bin/pip install --no-cache-dir "${TORCH}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md /src/
COPY ohlora /src/ohlora
COPY services /src/services
COPY gateway /src/gateway
RUN /opt/ohlora/bin/pip install --no-cache-dir /src

FROM ${CUDA_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin ohlora \
 && mkdir /models && chown ohlora:ohlora /models
COPY --from=build /opt/ohlora /opt/ohlora
ENV PATH=/opt/ohlora/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/models/hf-home \
    OHLORA_SERVER__HOST=0.0.0.0 \
    OHLORA_SERVER__PORT=50051
VOLUME ["/models"]
USER ohlora
WORKDIR /home/ohlora
EXPOSE 50051
# gRPC health protocol through the project's own CLI; TLS settings come from OHLORA_HEALTH_TLS_* when set.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ohlora health "127.0.0.1:${OHLORA_SERVER__PORT}" --timeout 4
ENTRYPOINT ["ohlora"]
CMD ["serve", "llm"]
