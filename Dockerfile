# The code-location image named in deploy/k8s-values.yaml: a non-editable install (the SQL travels inside the wheel),
# served by `dagster api grpc`. CPU torch by default; for GPU nodes build with
#   --build-arg TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
# The container needs UBP_FIRST_DAY and UBP_LAST_DAY (e.g. live) for its source: the code location refuses a real
# source without its days (deploy/k8s-values.yaml gives them through the ubp-settings config map).
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=""
ARG EXTRAS="dagster-k8s==0.29.27 dagster-postgres==0.29.27"

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home UBP_HOME=/data/ubp UBP_SOURCE_DIR=/data/source

WORKDIR /opt/ubp_pipeline
RUN pip install $TORCH_INDEX "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY sql ./sql
COPY ubp_pipeline ./ubp_pipeline
RUN pip install . $EXTRAS && mkdir -p "$DAGSTER_HOME" && rm -rf /opt/ubp_pipeline

WORKDIR /opt/dagster
EXPOSE 3030
CMD ["dagster", "api", "grpc", "--module-name", "ubp_pipeline.definitions", "--host", "0.0.0.0", "--port", "3030"]
