# syntax=docker/dockerfile:1.7
# Container images of the APG CTR scoring service (docs/DEPLOY.md).
#
#   docker build -t apg-ctr:cpu .                        serving image, CPU (the default target: the last stage)
#   docker build --target serve-gpu -t apg-ctr:gpu .     serving image, NVIDIA GPU (onnxruntime-gpu, CUDA 13, cuDNN 9)
#   docker build --target bundle --output type=local,dest=bundles/default .
#                                                        train + export the default model into ./bundles/default
#   docker build --target bundle-image -t apg-bundle:default --build-context bundle=bundles/default .
#                                                        a bundle as an image, for the Kubernetes initContainer
#
# Serving images hold no model and no data: the bundle is mounted at APG_BUNDLE (/bundle), the service's own files
# (the click store of an experiment) go to the volume at APG_DATA_DIR (/var/lib/apg), every setting is an
# APG_* environment variable (service/settings.py). They install `.[serve]` only: no torch, no compilers.
# Versions are pinned: base images by tag (the ARGs below), Python packages by deploy/constraints.txt
# (Ubuntu's python3 in the GPU stage comes with the pinned CUDA image's release, 24.04).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# onnxruntime-gpu 1.31 on PyPI is built for CUDA 13 + cuDNN 9: the base image must match those majors.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG BUSYBOX_IMAGE=busybox:1.37.0

# ---------------------------------------------------------------------------------------------------- build
# The project as a wheel (pure Python), and the CPU serving environment in /opt/venv.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY deploy/constraints.txt /tmp/constraints.txt
RUN python -m pip install -q -c /tmp/constraints.txt pip setuptools
WORKDIR /src
COPY pyproject.toml README.md ./
COPY features/ features/
COPY model/ model/
COPY service/ service/
COPY scripts/ scripts/
RUN python -m pip wheel -q --no-deps --no-build-isolation -w /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install -q -c /tmp/constraints.txt pip \
 && /opt/venv/bin/pip install -q -c /tmp/constraints.txt "$(echo /wheels/apg_ctr-*.whl)[serve]" \
 && /opt/venv/bin/pip uninstall -q -y setuptools
# (venv's bundled setuptools is not needed at run time, and an old one only feeds image scanners.)

# ---------------------------------------------------------------------------------------------------- train
# Builds the default bundle: MovieLens-100K is fetched at build time (never committed, never in a serving image).
# PyPI's torch wheel for Linux is a multi-GB CUDA build; the CPU wheel index is enough to train this model.
FROM ${PYTHON_IMAGE} AS train
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TRAIN_ARGS="--model deepfm --apg self --rank 16 --missing-rate 0.1"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH APG_DATA_DIR=/data
WORKDIR /src
COPY deploy/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY features/ features/
COPY model/ model/
COPY service/ service/
COPY scripts/ scripts/
# Run from the source tree (python -m scripts.cli in /src): the same packages the wheel installs.
RUN python -m venv /opt/venv \
 && pip install -q -c /tmp/constraints.txt pip setuptools \
 && pip install -q -c /tmp/constraints.txt --no-build-isolation --extra-index-url "${TORCH_INDEX_URL}" '.[train]'
RUN python -m scripts.cli data \
 && python -m scripts.cli train ${TRAIN_ARGS} --quiet --out /runs/default \
 && python -m scripts.cli export /runs/default --out /bundles/default

# The bundle alone, at the root: `--output type=local,dest=bundles/default` writes it out.
# `--build-context bundle=DIR` replaces this stage by an existing bundle directory (no training).
FROM scratch AS bundle
COPY --from=train /bundles/default/ /

# A bundle as an image for the Kubernetes initContainer (deploy/k8s/deployment.yaml copies /bundle out of it).
FROM ${BUSYBOX_IMAGE} AS bundle-image
COPY --from=bundle / /bundle/
USER 10001:10001

# ------------------------------------------------------------------------------------------------- loadtest
# `apg loadtest`, the open-loop load generator (compose profile `loadtest`): httpx, orjson, numpy, matplotlib.
# No onnxruntime, no torch. Rows are sampled from the mounted bundle's vocabularies.
FROM ${PYTHON_IMAGE} AS loadtest
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY deploy/constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -q -c /tmp/constraints.txt pip \
 && /opt/venv/bin/pip install -q -c /tmp/constraints.txt "$(echo /wheels/apg_ctr-*.whl)[loadtest]" \
 && rm -rf /wheels /tmp/constraints.txt
RUN groupadd --system --gid 10001 apg \
 && useradd --system --uid 10001 --gid apg --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin apg
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp
USER 10001:10001
WORKDIR /results
ENTRYPOINT ["apg", "loadtest"]

# ------------------------------------------------------------------------------------------------ serve-gpu
FROM ${CUDA_IMAGE} AS serve-gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu's python3 (3.12) and venv; the image's apt sources are pinned by the CUDA image tag.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
# `.[serve]` requires onnxruntime (the CPU build); it is swapped for the pinned onnxruntime-gpu of the same API
# (both install the `onnxruntime` module, so the CPU one goes first).
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -q -c /tmp/constraints.txt pip \
 && /opt/venv/bin/pip install -q -c /tmp/constraints.txt "$(echo /wheels/apg_ctr-*.whl)[serve]" \
 && /opt/venv/bin/pip uninstall -q -y onnxruntime \
 && /opt/venv/bin/pip install -q -c /tmp/constraints.txt onnxruntime-gpu \
 && rm -rf /wheels /tmp/constraints.txt
# /var/lib/apg: the service's own files (APG_DATA_DIR: the SQLite click store while an experiment runs), a volume
# owned by the service's user, so that it stays writable under a read-only root file system (deploy/k8s mounts one).
RUN groupadd --system --gid 10001 apg \
 && useradd --system --uid 10001 --gid apg --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin apg \
 && mkdir -p /var/lib/apg && chown 10001:10001 /var/lib/apg
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    APG_BUNDLE=/bundle APG_PROVIDERS=cuda APG_INTRA_OP_THREADS=1 APG_DATA_DIR=/var/lib/apg \
    APG_HEALTHCHECK_URL=http://127.0.0.1:8000/readyz
VOLUME ["/var/lib/apg"]
USER 10001:10001
EXPOSE 8000
# Healthy = ready (model loaded and warmed up); urllib raises on a 503 or a refused connection, so python exits 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['APG_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["apg", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------------- serve
# The default target: CPU serving image. Python, /opt/venv (onnxruntime, fastapi, uvicorn, prometheus-client,
# numpy, pydantic, orjson, fastapi-offline) and nothing else.
FROM ${PYTHON_IMAGE} AS serve
RUN groupadd --system --gid 10001 apg \
 && useradd --system --uid 10001 --gid apg --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin apg \
 && mkdir -p /var/lib/apg && chown 10001:10001 /var/lib/apg
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    APG_BUNDLE=/bundle APG_PROVIDERS=cpu APG_INTRA_OP_THREADS=1 APG_DATA_DIR=/var/lib/apg \
    APG_HEALTHCHECK_URL=http://127.0.0.1:8000/readyz
VOLUME ["/var/lib/apg"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['APG_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["apg", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
