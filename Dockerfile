# jicd for GPU clusters, on NVIDIA's NGC PyTorch image (torch, CUDA, NCCL, DALI and nvcc included).
#
#   docker build -t jicd .
#   docker run --rm jicd --help
#   docker run --rm --gpus all --ipc=host -v /data/shards:/data/shards -v "$PWD/runs:/opt/jicd/runs" \
#       --entrypoint torchrun jicd --standalone --nproc-per-node=8 launch/train.py \
#       --config configs/q3.yaml data.shards=/data/shards train.run_dir=runs/q3
#
# Pick NGC_TAG so that its Python is 3.10-3.12 and its glibc >= 2.34 (compressai 1.2.8 wheels);
# the DALI that NGC ships is already built for the image's CUDA major.
ARG NGC_TAG=25.01
FROM nvcr.io/nvidia/pytorch:${NGC_TAG}-py3

ARG USER_NAME=jicd
# Match your cluster account so files written to bind mounts keep your ownership.
ARG USER_UID=1000
ARG USER_GID=1000

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_EXTENSIONS_DIR=/home/${USER_NAME}/.cache/torch_extensions

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Only what the base lacks. The constraints file pins every package NGC built (torch, numpy,
# pillow, DALI, ...), so nothing here can silently replace them with PyPI wheels; the unpinned
# names take the version already in the image, or the one its constraints allow.
RUN pip install --no-cache-dir -c /etc/pip/constraint.txt \
        compressai==1.2.8 \
        deepspeed==0.19.8 \
        webdataset==1.0.2 \
        pytorch-msssim==1.0.0 \
        bjontegaard==1.3.0 \
        pyyaml tensorboard tqdm matplotlib scikit-image

# Ubuntu 24.04 bases ship a user "ubuntu" that owns UID 1000; free the UID for ours.
RUN if existing="$(getent passwd "${USER_UID}" | cut -d: -f1)" && [ -n "${existing}" ]; then \
        userdel --remove "${existing}"; \
    fi \
    && groupadd --force --gid "${USER_GID}" "${USER_NAME}" \
    && useradd --create-home --uid "${USER_UID}" --gid "${USER_GID}" --shell /bin/bash "${USER_NAME}" \
    && mkdir -p "${TORCH_EXTENSIONS_DIR}" \
    && chown -R "${USER_UID}:${USER_GID}" "/home/${USER_NAME}"

WORKDIR /opt/jicd
COPY --chown=${USER_UID}:${USER_GID} . .
# --no-deps: every dependency is installed above or comes with the base (pip must not try to
# "upgrade" NGC's pre-release torch to a PyPI wheel). Editable, so a bind-mounted checkout over
# /opt/jicd is what runs. Then hand what root created (the folder, *.egg-info) to the user, who
# writes runs/ here.
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && find /opt/jicd -user root -exec chown "${USER_UID}:${USER_GID}" {} +

USER ${USER_NAME}
# DeepSpeed's JIT-compiled ops go to TORCH_EXTENSIONS_DIR; mount a named volume there
# (-v jicd-ext:/home/jicd/.cache/torch_extensions) to compile them once, not on every run.

ENTRYPOINT ["jicd"]
CMD ["--help"]
