# vLLM engine with LMCache and NIXL at versions known to work together:
#   vLLM 0.32.0 (LMCacheConnectorV1, NixlConnector), LMCache 0.5.6, NIXL 1.5.1.
#   docker build -f images/engine.Dockerfile -t tandem/engine:v0.32.0 .
ARG VLLM_VERSION=v0.32.0
FROM vllm/vllm-openai:${VLLM_VERSION}

ARG VLLM_VERSION
ARG LMCACHE_VERSION=0.5.6
ARG NIXL_VERSION=1.5.1
# LMCache pulls CUDA-13 Python bindings, after which the `nixl` meta package looks for
# nixl-cu13; install both flavours without letting pip re-resolve vLLM's dependencies.
RUN pip install --no-cache-dir "lmcache==${LMCACHE_VERSION}" \
 && pip install --no-cache-dir --no-deps "nixl==${NIXL_VERSION}" "nixl-cu12==${NIXL_VERSION}" "nixl-cu13==${NIXL_VERSION}"
# Prove the CUDA paths, not only the imports: LMCache's compiled CUDA ops, NIXL's UCX plugin
# registering GPU memory with its CUDA transports, and the pinned versions (images/engine_check.py).
COPY images/engine_check.py /usr/local/lib/tandem/engine_check.py
RUN python /usr/local/lib/tandem/engine_check.py --cuda \
      --lmcache "${LMCACHE_VERSION}" --nixl "${NIXL_VERSION}" --vllm "${VLLM_VERSION#v}"

RUN useradd --uid 1000 --create-home --shell /bin/bash vllm \
 && mkdir -p /var/cache/vllm /etc/lmcache && chown -R vllm:vllm /var/cache/vllm
USER 1000:1000
ENV HOME=/home/vllm HF_HOME=/var/cache/vllm/huggingface VLLM_CACHE_ROOT=/var/cache/vllm/vllm
EXPOSE 8000 5600 7300 7400
ENTRYPOINT ["vllm", "serve"]
