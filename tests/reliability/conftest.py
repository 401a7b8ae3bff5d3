"""The reliability tests import their helpers (relkit, httpgen, poolprog) from this folder."""

from __future__ import annotations

import os
import sys

# importlib mode does not put the test folder on sys.path; the helper modules live beside this.
sys.path.insert(0, os.path.dirname(__file__))
