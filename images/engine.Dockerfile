# vLLM engine with LMCache and NIXL at versions known to work together:
#   vLLM 0.32.0 (LMCacheConnectorV1, NixlConnector), LMCache 0.5.6, NIXL 1.5.1.
#   docker build -f images/engine.Dockerfile -t tandem/engine:v0.32.0 .
ARG VLLM_VERSION=v0.32.0
FROM vllm/vllm-openai:${VLLM_VERSION}

ARG LMCACHE_VERSION=0.5.6
ARG NIXL_VERSION=1.5.1
# LMCache pulls CUDA-13 Python bindings, after which the `nixl` meta package looks for
# nixl-cu13; install both flavours without letting pip re-resolve vLLM's dependencies, then
# prove that vLLM, LMCache and NIXL import together (the build fails otherwise).
RUN pip install --no-cache-dir "lmcache==${LMCACHE_VERSION}" \
 && pip install --no-cache-dir --no-deps "nixl==${NIXL_VERSION}" "nixl-cu12==${NIXL_VERSION}" "nixl-cu13==${NIXL_VERSION}" \
 && python -c "import vllm, lmcache, nixl; \
from lmcache.integration.vllm.vllm_v1_adapter import LMCacheConnectorV1Impl; \
from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory; \
print('vllm', vllm.__version__, 'lmcache ok, nixl ok')"

RUN useradd --uid 1000 --create-home --shell /bin/bash vllm \
 && mkdir -p /var/cache/vllm /etc/lmcache && chown -R vllm:vllm /var/cache/vllm
USER 1000:1000
ENV HOME=/home/vllm HF_HOME=/var/cache/vllm/huggingface VLLM_CACHE_ROOT=/var/cache/vllm/vllm
EXPOSE 8000 5600 7300 7400
ENTRYPOINT ["vllm", "serve"]
