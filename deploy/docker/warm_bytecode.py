"""Import what `berth serve` imports, so that exactly that bytecode is compiled into the image.

Compiling every installed module would add about 60 MB (mostly SciPy); compiling none would make
every start compile again, since the image's site-packages is read-only for the server's user.
"""

import contextlib
import importlib

import berth.cli.main
import berth.server.runner
from berth.errors import MissingExtra
from berth.runtimes import RUNTIMES, runtime_for

for framework in RUNTIMES:
    with contextlib.suppress(MissingExtra):
        runtime_for(framework)

# Modules that unpickling the usual scikit-learn models imports.
for module in (
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.feature_extraction.text",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.neighbors",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.svm",
    "sklearn.tree",
):
    with contextlib.suppress(ImportError):
        importlib.import_module(module)

print(f"compiled the bytecode of {len(__import__('sys').modules)} modules")
