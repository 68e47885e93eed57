# jicd for GPU clusters: the exact versions of requirements-lock.txt (the ones the test suite
# verifies) on NVIDIA's CUDA 13.0 base image.
#
#   docker build -t jicd .
#   docker run --rm jicd --help
#   docker run --rm --gpus all --ipc=host -v /data/shards:/data/shards -v "$PWD/runs:/opt/jicd/runs" \
#       --entrypoint torchrun jicd --standalone --nproc-per-node=8 launch/train.py \
#       --config configs/q3.yaml data.shards=/data/shards train.run_dir=runs/q3
#
# Why not the NGC PyTorch image: every NGC PyTorch tag ships NVIDIA's own pre-release torch build
# (e.g. 25.01: 2.6.0a0 with a torchrun that rejects --signals-to-handle) and its own DALI, never
# the torch 2.14.1 / DALI 2.4.0 pair this project is verified with, and pip must not replace
# them. The PyPI wheels bring their CUDA 13 libraries (cuDNN, cuBLAS, NCCL, nvJPEG) themselves,
# so the base only has to provide what the NVIDIA container runtime needs: its
# NVIDIA_REQUIRE_CUDA=cuda>=13.0 makes `docker run --gpus` refuse a host whose driver is too
# old for CUDA 13.0 (Linux >= 580) instead of letting torch fall back to the CPU.
ARG CUDA_TAG=13.0.0-base-ubuntu24.04
FROM nvcr.io/nvidia/cuda:${CUDA_TAG}

ARG USER_NAME=jicd
# Match your cluster account so files written to bind mounts keep your ownership.
ARG USER_UID=1000
ARG USER_GID=1000

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    TORCH_EXTENSIONS_DIR=/home/${USER_NAME}/.cache/torch_extensions

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python 3.12 (Ubuntu 24.04's; CompressAI wheels need 3.10-3.12 and glibc >= 2.34), g++ and the
# Python headers for the op DeepSpeed JIT-builds, procps for the launchers. Not version-pinned:
# Ubuntu's archive drops superseded versions, so pins would break the build within weeks; the
# Python stack, which is what matters, is pinned by the lock file.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ procps \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "${VIRTUAL_ENV}"

# Ubuntu 24.04 bases ship a user "ubuntu" that owns UID 1000; free the UID for ours.
RUN if existing="$(getent passwd "${USER_UID}" | cut -d: -f1)" && [ -n "${existing}" ]; then \
        userdel --remove "${existing}"; \
    fi \
    && groupadd --force --gid "${USER_GID}" "${USER_NAME}" \
    && useradd --create-home --uid "${USER_UID}" --gid "${USER_GID}" --shell /bin/bash "${USER_NAME}" \
    && mkdir -p "${TORCH_EXTENSIONS_DIR}" \
    && chown -R "${USER_UID}:${USER_GID}" "/home/${USER_NAME}"

WORKDIR /opt/jicd
# The pinned stack first (its own layer: rebuilt only when the lock file changes).
COPY requirements-lock.txt ./
RUN pip install --no-cache-dir -r requirements-lock.txt

COPY --chown=${USER_UID}:${USER_GID} . .
# Editable, so a bind-mounted checkout over /opt/jicd is what runs; the lock file constrains
# every dependency pip resolves. Then hand what root created (*.egg-info) to the user, who
# writes runs/ here.
RUN pip install --no-cache-dir -c requirements-lock.txt -e . \
    && find /opt/jicd -user root -exec chown "${USER_UID}:${USER_GID}" {} +

USER ${USER_NAME}
# DeepSpeed's JIT-compiled ops go to TORCH_EXTENSIONS_DIR; mount a named volume there
# (-v jicd-ext:/home/jicd/.cache/torch_extensions) to compile them once, not on every run.

ENTRYPOINT ["jicd"]
CMD ["--help"]
