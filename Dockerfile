# modality-gateway: DIMSE front on 11112, DICOMweb front on 8080, embedded store in /data.
FROM python:3.11-slim
WORKDIR /opt/modality-gateway
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --home /data gateway \
    && mkdir -p /data && chown gateway /data
USER gateway
WORKDIR /data
EXPOSE 11112 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health')"
ENTRYPOINT ["modality-gateway"]
CMD ["serve", "--log-format", "json"]
