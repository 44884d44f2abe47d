# syntax=docker/dockerfile:1
# The model server: `cli serve` on a model folder mounted at /model. To ship a model inside an image,
# build on this one:  FROM textclf-serve  +  COPY --chown=serve final_model /model
#
#   docker build -t textclf-serve .                                   # CPU: torch's CPU wheels, no CUDA libraries
#   docker build -t textclf-serve-gpu --build-arg TORCH_VARIANT=cuda .  # the lockfile's CUDA-enabled torch
#   docker run -p 8000:8000 -v "$PWD/artifacts/experiments/quickstart/runs/minilm_quick/final_model:/model:ro" textclf-serve
#   docker run --gpus all -p 8000:8000 -v ...:/model:ro textclf-serve-gpu --runtime torch --device cuda
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN pip install --no-cache-dir "uv>=0.5"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
# the locked dependencies first (a layer that survives code changes), without the dev group
RUN uv sync --frozen --no-dev --no-install-project
RUN if [ "$TORCH_VARIANT" = "cpu" ]; then \
        version="$(/opt/venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')" && \
        uv pip install --python /opt/venv/bin/python --reinstall --no-deps \
            --index-url https://download.pytorch.org/whl/cpu "torch==${version}" && \
        uv pip list --python /opt/venv/bin/python --format freeze | grep -E '^(nvidia-|triton)' | cut -d= -f1 \
            | xargs --no-run-if-empty uv pip uninstall --python /opt/venv/bin/python ; \
    fi
COPY main.py ./
COPY mlops ./mlops
COPY models ./models
COPY model_configs ./model_configs
COPY data ./data
# the project itself as a regular (not editable) install, so the venv alone is the application
RUN uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 serve
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
WORKDIR /home/serve
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
# inside the container the server must listen on all interfaces; publish it with -p (e.g. -p 127.0.0.1:8000:8000)
ENTRYPOINT ["cli", "serve", "--model-path", "/model", "--host", "0.0.0.0", "--port", "8000"]
