"""recofast_sidecar: the edge side of recofast.

It reads the recommendation lists that the engine writes to a local LMDB file. This package
never imports the Rust core, so it installs with no Rust toolchain
(``pip install ./sidecar``). The list format lives in :mod:`recofast_sidecar.protocol.codec`;
the names shared with the engine (subjects, stream, LMDB databases) in
:mod:`recofast_sidecar.protocol.names`.
"""

from recofast_sidecar import protocol
from recofast_sidecar.protocol import codec, names

__version__ = "0.1.0"
__all__ = ["__version__", "codec", "names", "protocol"]
