# The backend / container-trainer image: `trainbus backend`, `trainbus container-trainer`.
#   docker build -t trainbus .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch from the CPU wheel index first (PyPI's default Linux wheel pulls CUDA, several GB);
# the version comes from constraints.txt.
COPY pyproject.toml constraints.txt README.md ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu -c constraints.txt torch
COPY libs ./libs
COPY services ./services
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 trainbus \
    && mkdir -p /var/lib/trainbus/models /var/lib/trainbus/data /var/lib/trainbus/strategies \
        /var/lib/trainbus/numba-cache \
    && chown -R trainbus /var/lib/trainbus

COPY strategies /var/lib/trainbus/strategies

USER trainbus
ENV TRAINBUS_DATA_DIR=/var/lib/trainbus/data \
    TRAINBUS_STRATEGIES_DIR=/var/lib/trainbus/strategies \
    TRAINBUS_MODELS_DIR=/var/lib/trainbus/models \
    TRAINBUS_API_HOST=0.0.0.0 \
    NUMBA_CACHE_DIR=/var/lib/trainbus/numba-cache
# The compiled feature/label kernels are cached there (site-packages is not the user's to write):
# the first job of a fresh container compiles them once (a few seconds).

EXPOSE 8000
CMD ["trainbus", "backend"]
