"""The keys every `lab serve` recipe shares, defined once.

The keys stay top-level in the recipe YAMLs (no `server:` section) so that the documented flags
`--run DIR`, `--port N` and `--detach` keep working: the launcher turns `--key value` into a
top-level `key=value` override. Each recipe's YAML sets its own port and says which ports of the
block after it the server also uses.
"""

from __future__ import annotations

from pydantic import Field

from labcli.config import RecipeConfig


class ServerSettings(RecipeConfig):
    """What to serve, where, and how `lab` waits for it and checks it."""

    run: str = Field("", description="Run folder to serve")
    port: int = Field(8000, ge=1, le=65535, description="First port of the server's block (the recipe's description lists the others)")
    host: str = Field("127.0.0.1", description="Address every listener binds (loopback by default; 0.0.0.0 exposes it to the network)")
    detach: bool = Field(False, description="Leave the server running in the background; stop it with `lab serve stop`")
    threads: int = Field(1, ge=1, le=64, description="Intra-op threads per model instance / worker")
    ready_timeout: float = Field(240.0, gt=0, description="Seconds to wait for the server to report ready")
    smoke: bool = Field(True, description="After start: send a sample through the server and compare with the run's own answer")


class ModelServerSettings(ServerSettings):
    """A text model server: the model comes from a training run or a model folder / preset."""

    model: str = Field("", description="Or a save_pretrained folder, or a tiny-* preset (tiny-mbart, tiny-gpt2, ...)")
    max_new_tokens: int = Field(0, ge=0, le=1024, description="Decoding length limit (0: the run's own, as its evaluation "
                                "decoded; 32 for a --model)")
