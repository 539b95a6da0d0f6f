"""A tutorial-style Flask app (run under gunicorn): load the pickles, predict one request at a time.

BENCH_MODELS is `name=path/model.joblib,...`.
"""

import os

import joblib
import numpy as np
from flask import Flask, abort, jsonify, request

models = {}
for spec in os.environ["BENCH_MODELS"].split(","):
    name, path = spec.split("=", 1)
    models[name] = joblib.load(path)

app = Flask(__name__)


@app.post("/models/<name>/predict")
def predict(name):
    model = models.get(name)
    if model is None:
        abort(404)
    body = request.get_json()
    x = [body["text"]] if "text" in body else np.asarray([body["features"]], dtype=float)
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)[0]
        classes = [str(c) for c in model.classes_]
        label = classes[int(proba.argmax())]
        return jsonify(prediction=label, probabilities=dict(zip(classes, proba.tolist())))
    return jsonify(prediction=float(model.predict(x)[0]))
