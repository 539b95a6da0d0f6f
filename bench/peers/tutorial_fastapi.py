"""A tutorial-style FastAPI server: load the pickles, `@app.post`, predict one request at a time.

Written the way blog posts and courses teach it, on purpose: it is the baseline Berth is compared
with. BENCH_MODELS is `name=path/model.joblib,...`.
"""

import os

import joblib
import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

models = {}
for spec in os.environ["BENCH_MODELS"].split(","):
    name, path = spec.split("=", 1)
    models[name] = joblib.load(path)

app = FastAPI()


class Item(BaseModel):
    text: str | None = None
    features: list[float] | None = None


@app.post("/models/{name}/predict")
def predict(name: str, item: Item):
    model = models.get(name)
    if model is None:
        raise HTTPException(404, "unknown model")
    x = [item.text] if item.text is not None else np.asarray([item.features])
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)[0]
        classes = [str(c) for c in model.classes_]
        label = classes[int(proba.argmax())]
        return {"prediction": label, "probabilities": dict(zip(classes, proba.tolist()))}
    return {"prediction": float(model.predict(x)[0])}
