"""A Triton Inference Server model repository from a bundle, for users who outgrow one machine.

repository.py  write_triton_repo(bundle, out, layout): the ensemble (raw features in), the one-step Python model,
               or the graph alone
config.py      the config.pbtxt of each model
backend.py     the Python-backend model.py: the bundle's own encoder (a copy of `features`), and onnxruntime
server.py      how the PyPI wheel's tritonserver (scripts/install_triton.sh) is started on a repository

Raw-feature inputs are the service's v2 ones (BYTES for string-like features, FP64 for numeric), so clients send
the requests they send to `apg serve` and the encoding stays the bundle's: no re-implementation on the client.
"""

from scripts.triton.repository import LAYOUTS, write_triton_repo

__all__ = ["LAYOUTS", "write_triton_repo"]
