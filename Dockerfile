# The platform image: API (`rr serve`-style uvicorn) and workers (`rr worker`) share it.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=""
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_NO_CACHE_DIR=1
WORKDIR /app
# torch first and pinned; pass TORCH_INDEX_URL (PyTorch's CPU wheel index) to keep the image free of CUDA.
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi
COPY pyproject.toml README.md ./
COPY core core
COPY ingest ingest
COPY router router
COPY store store
COPY api api
COPY workers workers
COPY cli cli
COPY benchmarks benchmarks
RUN pip install .
COPY experts /app/experts
ENV RR_EXPERTS_DIR=/app/experts RR_DATA_DIR=/data RR_CACHE_DIR=/data/cache
EXPOSE 8000
CMD ["uvicorn", "api.asgi:app", "--host", "0.0.0.0", "--port", "8000"]
