# cti: gateway node (`cti serve`) and transcription worker (`cti worker`) share this image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends libsndfile1 ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cti ./cti
RUN pip install .

RUN useradd --system --create-home cti && mkdir -p /var/lib/cti/recordings && chown -R cti /var/lib/cti
USER cti
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status==200 else 1)"
CMD ["cti", "serve", "--config", "/etc/cti/cti.toml"]
