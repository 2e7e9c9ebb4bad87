"""The album search on Ray (``persam search --ray [ADDRESS]``), through Ray Data.

The file list becomes a dataset; ``map_batches`` runs :class:`SearchActor` on an actor pool
(each actor loads the model once, in ``__init__``); the driver receives the results in path order
and writes every output file itself, exactly as a local run does.

Why the driver writes (and actors only return bytes): the workers of a cluster need not share a
file system with the driver, and one writer keeps the order "side files, then the row" that makes
resume safe. Actors do read the input images (and the ``--index`` folder) themselves, so those
must be at the same paths on every node (one machine, or a shared file system).

Ray is imported only here, and only when ``--ray`` is used: it is the optional extra
``persam[ray]``.
"""
from __future__ import annotations

import math
import pickle
import socket
import urllib.parse
from typing import Iterator, Mapping, Sequence

import numpy as np

from .concept import Concept
from .search import (ImageItem, ImageResult, SearchError, SearchSettings, SearchWorker,
                     concept_fingerprint)

INSTALL_HINT = 'Ray is not installed; pip install "persam[ray]"'
RAY_PORT = 6379  # the port 'ray start --head' listens on unless told otherwise (Ray's default)
RAY_CLIENT_PORT = 10001  # Ray Client's default, for ray://HOST addresses
CONNECT_TIMEOUT_S = 3.0


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data ships in ray[data])
    except ImportError:
        raise SearchError(INSTALL_HINT) from None
    return ray


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that a Ray address names: ``HOST[:PORT]`` (default 6379) or
    ``ray://HOST[:PORT]`` (default 10001); None for the addresses Ray resolves itself (``auto``,
    ``local``) and other schemes."""
    scheme, has_scheme, rest = address.partition("://")
    if not has_scheme:
        scheme, rest = "", address
    if scheme not in ("", "ray") or address in ("auto", "local"):
        return None
    try:
        parsed = urllib.parse.urlsplit("//" + rest)
        port = parsed.port
    except ValueError:
        raise SearchError(f"--ray {address} is not a Ray address (HOST:PORT, e.g. 10.0.0.5:6379)") from None
    if not parsed.hostname:
        raise SearchError(f"--ray {address} is not a Ray address (HOST:PORT, e.g. 10.0.0.5:6379)")
    return parsed.hostname, port or (RAY_CLIENT_PORT if scheme == "ray" else RAY_PORT)


def check_ray_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """One line, within ``timeout`` seconds, when nothing listens at ``address``: ray.init would
    retry for minutes there, flooding the terminal with Ray's log lines."""
    endpoint = ray_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            pass
    except OSError:  # refused, timed out, unknown host
        raise SearchError(f"no Ray cluster answers at {address} (start one with 'ray start --head', "
                          "or give --ray without an address for a local Ray)") from None


class SearchActor:
    """One model per actor: ``__call__`` maps a batch of file rows to pickled ImageResults."""

    def __init__(self, checkpoint: str, model_type: str, device: str | None, concepts: dict,
                 settings: SearchSettings, threads: int | None) -> None:
        import torch

        from .model import PerSAM

        if threads:
            torch.set_num_threads(threads)
        persam = PerSAM.from_checkpoint(checkpoint, model_type, device=device, cache_size=0)
        self.worker = SearchWorker(persam, concepts, settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [ImageItem(str(path), int(size), int(mtime), str(name)) for path, size, mtime, name
                 in zip(batch["path"], batch["size"], batch["mtime_ns"], batch["name"])]
        results = self.worker.process(items)
        # One opaque bytes value per image: rows are nested dicts and side files are bytes,
        # which Arrow columns would reshape; pickle between our own processes keeps them as they are.
        payload = np.empty(len(results), dtype=object)
        payload[:] = [pickle.dumps(result) for result in results]
        return {"path": np.array([item.path for item in items], dtype=object), "payload": payload}


class RaySearch:
    """Connects to Ray (a new local instance, or ``address``) and runs the search batches there."""

    def __init__(self, checkpoint: str, model_type: str, device: str | None, concepts: Mapping[str, Concept],
                 settings: SearchSettings, address: str | None = None, actors: int = 1,
                 cpus: float = 1.0, gpus: float = 0.0) -> None:
        if actors < 1:
            raise SearchError(f"--ray-actors must be at least 1, got {actors}")
        self.ray = import_ray()
        if address is not None and not self.ray.is_initialized():
            check_ray_address(address)  # before loading anything: a wrong address fails at once
        from sam_core import build_sam, model_fingerprint

        # The driver needs the model's fingerprint to know which rows are already done; it loads
        # the checkpoint once for that (and to fail here, with one line, on a bad checkpoint).
        sam = build_sam(model_type, checkpoint, device="cpu")
        fingerprint = model_fingerprint(sam)
        for concept in concepts.values():
            if concept.model_type != sam.model_type:
                raise SearchError(f"concept '{concept.name}' was learned with SAM {concept.model_type}, "
                                  f"but {checkpoint} is {sam.model_type}")
        del sam
        self.fingerprints = {name: concept_fingerprint(concept, fingerprint, settings.threshold,
                                                       settings.max_instances)
                             for name, concept in concepts.items()}
        self.started = False
        if not self.ray.is_initialized():
            if address is None:
                self.ray.init(include_dashboard=False, log_to_driver=False,
                              configure_logging=False)
            else:
                self.ray.init(address=address, log_to_driver=False, configure_logging=False)
            self.started = True
        self.constructor = dict(checkpoint=checkpoint, model_type=model_type, device=device,
                                concepts=dict(concepts), settings=settings,
                                threads=max(1, int(cpus)) if cpus >= 1 else 1)
        self.actors, self.cpus, self.gpus = actors, cpus, gpus

    def run(self, todo: Sequence[ImageItem], batch_size: int) -> Iterator[list[ImageResult]]:
        if not todo:
            return
        ray = self.ray
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results come back in path order
        context.enable_progress_bars = False  # the driver shows its own bar
        rows = [{"path": item.path, "size": item.size, "mtime_ns": item.mtime_ns, "name": item.name}
                for item in todo]
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / batch_size))
        mapped = dataset.map_batches(SearchActor, fn_constructor_kwargs=self.constructor,
                                     batch_size=batch_size, batch_format="numpy",
                                     compute=ray.data.ActorPoolStrategy(size=self.actors), num_cpus=self.cpus,
                                     num_gpus=self.gpus or None)
        expected = [item.path for item in todo]
        position = 0
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            results = [pickle.loads(blob) for blob in batch["payload"]]
            for result in results:  # preserve_order promises this; a wrong order would corrupt resume
                if result.item.path != expected[position]:
                    raise SearchError(f"Ray returned {result.item.path} out of order")
                position += 1
            yield results

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
