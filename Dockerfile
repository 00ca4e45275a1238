# Two stages, running exactly the commands tests/test_onnx_serve.py runs:
#   1. "export": CPU-only torch, the weights, `python -m app export` -> weights/maskrcnn.onnx
#   2. the server: requirements-serve.txt alone (no torch), the export, the Procfile's command.
# The served image needs ~0.3 GB of packages; the worker fits a 512 MB instance (README
# "Deploying on a 512 MB tier"). A fine-tuned head: put it in weights/ and build with
#   docker build --build-arg BGREMOVAL_WEIGHTS=weights/head.pth .
FROM python:3.11-slim AS export
WORKDIR /src
COPY requirements.txt requirements-serve.txt requirements-selfie.txt ./
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -r requirements.txt
COPY app ./app
COPY weights ./weights
ARG BGREMOVAL_WEIGHTS=
ENV BGREMOVAL_WEIGHTS=${BGREMOVAL_WEIGHTS}
# The COCO base weights (hash-checked) unless the build names a full checkpoint, and the selfie models.
RUN python -m app download-weights --model all \
 && python -m app export \
 && rm -f weights/*.pth

FROM python:3.11-slim
WORKDIR /srv
COPY requirements-serve.txt requirements-selfie.txt ./
RUN pip install --no-cache-dir -r requirements-serve.txt
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY asgi.py wsgi.py gunicorn.conf.py Procfile ./
COPY --from=export /src/weights ./weights
ENV PORT=8000 BGREMOVAL_RUNTIME=onnx
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "asgi:app"]
