"""The web app: a Gradio UI and an HTTP API on one server, sharing the models loaded in this process.

`app.serve` is what `python rmbg.py` runs; `state` holds the shared models, `ui` the
Gradio Blocks and `api` the plain HTTP routes (`/api/remove`, `/api/models`, `/health`).
"""
