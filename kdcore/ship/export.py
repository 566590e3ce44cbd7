"""A student you can ship: ONNX and ``.safetensors`` export of a stored run's model, verified.

:func:`export_run` rebuilds one model of a stored run (optionally compressed as in the
compression table), writes it as

* ONNX (opset 17, dynamic batch axis; TorchScript-based ``torch.onnx.export``), the run's
  config, classes and input normalisation in the file's ``metadata_props``; the int8 variant is
  onnxruntime's dynamic quantization of the exported float graph (MatMul/Gemm weights to int8,
  activations quantized per batch: the same scheme as PyTorch's ``quantize_dynamic`` on Linear
  layers), because PyTorch's dynamically quantized modules do not export to ONNX;
* ``.safetensors``: the state_dict with the model's config in its metadata (float variants only:
  PyTorch's int8 layers keep packed parameters, not plain tensors).

and checks the ONNX file with onnxruntime on the run's whole test split against the PyTorch model
it came from: share of samples with the same predicted class, the largest logit difference,
both accuracies, and the CPU latency of one batch in each runtime.
"""
from __future__ import annotations

import io
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError

__all__ = ["ExportResult", "export_run", "export_onnx", "quantize_onnx_int8", "verify_onnx",
           "parse_variant", "variant_model", "AGREEMENT_TARGET", "VARIANTS"]

AGREEMENT_TARGET = 0.999  # ONNX and PyTorch must pick the same class on this share of the test split
OPSET = 17
VARIANTS = ("float32", "int8", "pruned:<share>", "pruned:<share>+int8")  # what parse_variant accepts
_VARIANT = re.compile(r"(float32|int8|pruned:(0?\.\d+)(\+int8)?)")


@dataclass
class ExportResult:
    """What :func:`export_run` made: file name -> bytes, and the verification numbers."""

    run_id: int
    phase: str
    variant: str
    files: dict[str, bytes] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)  # empty when not verified

    @property
    def target_applies(self) -> bool:
        """Whether AGREEMENT_TARGET is a pass mark: float exports only. An int8 ONNX file is
        onnxruntime's quantization, checked against PyTorch's int8 model: two quantizers that
        round differently, so their agreement is reported, not required."""
        return "int8" not in self.variant

    @property
    def verified(self) -> bool:
        """True when a float export was checked and agrees with PyTorch on >= AGREEMENT_TARGET."""
        return (self.target_applies and bool(self.verification)
                and self.verification["agreement"] >= AGREEMENT_TARGET)


def parse_variant(variant: str) -> tuple[float, bool]:
    """``float32`` / ``int8`` / ``pruned:0.5`` / ``pruned:0.5+int8`` -> (prune share, int8).

    Raises:
        ConfigError: naming the value and the accepted forms.
    """
    m = _VARIANT.fullmatch(str(variant).strip())
    if m is None:
        raise ConfigError(f"variant {variant!r} is not allowed; use one of {', '.join(VARIANTS)} "
                          "with a share in (0, 1), e.g. pruned:0.5")
    if m.group(1) == "float32":
        return 0.0, False
    if m.group(1) == "int8":
        return 0.0, True
    share = float(m.group(2))
    if not 0 < share < 1:
        raise ConfigError(f"variant {variant!r}: the pruning share must be in (0, 1)")
    return share, m.group(3) is not None


def variant_model(model: nn.Module, variant: str) -> nn.Module:
    """The PyTorch model of a variant, as the compression table builds it (global pruning)."""
    from .compress import prune_magnitude, quantize_int8

    share, int8 = parse_variant(variant)
    m = prune_magnitude(model, share, scope="global") if share else model
    return quantize_int8(m) if int8 else m


def export_onnx(model: nn.Module, in_shape: tuple[int, ...], *, metadata: dict[str, Any] | None = None) -> bytes:
    """A float model as ONNX bytes: input ``input`` [batch, *in_shape], output ``logits`` [batch, K].

    Args:
        model: a float PyTorch model (not int8; see :func:`quantize_onnx_int8`).
        in_shape: one sample's shape.
        metadata: stored as JSON strings in the model's ``metadata_props``.
    """
    import warnings

    import onnx

    model = model.cpu().eval()
    x = torch.zeros(2, *in_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, json.dumps(v, sort_keys=True)
    return proto.SerializeToString()


def quantize_onnx_int8(onnx_bytes: bytes) -> bytes:
    """onnxruntime's dynamic int8 quantization of MatMul/Gemm weights (what torch does to Linear)."""
    import logging
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "float.onnx", Path(d) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        logging.disable(logging.WARNING)  # its advice to pre-process goes to the root logger
        try:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
        finally:
            logging.disable(logging.NOTSET)
        return dst.read_bytes()


def _median_ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def verify_onnx(onnx_bytes: bytes, model: nn.Module, x, y, *, batch_size: int = 512,
                latency_batch: int = 128, repeats: int = 20) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``x`` and compare it with the PyTorch ``model``.

    Both run on the CPU with the same number of threads (``torch.get_num_threads()``).

    Args:
        onnx_bytes: the exported file. model: the PyTorch model it was exported from.
        x, y: the test split (inputs indexable by slices, labels int64).
        batch_size: rows per inference batch. latency_batch: rows of the timed batch.
        repeats: timed runs per runtime (median reported), after two warm-up runs.
    Returns:
        n, agreement (share of samples with the same top class), max_abs_logit_diff,
        onnx_accuracy, torch_accuracy, onnx_latency_ms, torch_latency_ms (one batch of
        latency_batch), latency_batch, threads.
    """
    import onnxruntime as ort

    threads = torch.get_num_threads()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    model = model.cpu().eval()
    n = len(y)
    same = right_o = right_t = 0
    max_diff = 0.0
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            xb = x[i:i + batch_size].float().contiguous()
            yb = y[i:i + batch_size]
            lt = model(xb).float()
            lo = torch.from_numpy(sess.run(None, {"input": xb.numpy()})[0]).float()
            po, pt = lo.argmax(1), lt.argmax(1)
            same += int((po == pt).sum())
            right_o += int((po == yb).sum())
            right_t += int((pt == yb).sum())
            max_diff = max(max_diff, float((lo - lt).abs().max()))
        xl = x[:min(latency_batch, n)].float().contiguous()
        xl_np = xl.numpy()
        onnx_ms = _median_ms(lambda: sess.run(None, {"input": xl_np}), repeats)
        torch_ms = _median_ms(lambda: model(xl), repeats)
    return {"n": n, "agreement": same / max(n, 1), "max_abs_logit_diff": max_diff,
            "onnx_accuracy": right_o / max(n, 1), "torch_accuracy": right_t / max(n, 1),
            "onnx_latency_ms": onnx_ms, "torch_latency_ms": torch_ms, "latency_batch": len(xl),
            "threads": threads}


def _slug(variant: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", variant.lower()).strip("_")


def export_run(store, run_id: int, phase: str = "distilled", variant: str = "float32", *,
               formats: tuple[str, ...] = ("onnx", "safetensors"), verify: bool = True,
               loaded=None) -> ExportResult:
    """Export one model of a stored run, as the compression table would build its variant.

    Args:
        store: a RunStore. run_id, phase: which model ("distilled", "baseline", "teacher", ...).
        variant: float32, int8, pruned:<share> or pruned:<share>+int8 (global magnitude pruning).
        formats: any of "onnx", "safetensors" (the latter for float variants only).
        verify: check the ONNX file on the run's test split (see :func:`verify_onnx`).
        loaded: (model, data, cfg) already loaded by :func:`kdcore.ship.compress.load_run_model`.
    Returns:
        ExportResult with the files' bytes under their file names.
    Raises:
        ConfigError: unknown run, phase, variant or format, or a format the variant cannot take.
    """
    from .compress import load_run_model, prune_magnitude
    from ..history.weights import model_card, safetensors_bytes

    share, int8 = parse_variant(variant)
    bad = [f for f in formats if f not in ("onnx", "safetensors")]
    if bad or not formats:
        raise ConfigError(f"export format(s) {', '.join(bad) or '(none)'} not allowed; use onnx, "
                          "safetensors or both")
    if int8 and "safetensors" in formats:
        raise ConfigError(f"variant {variant!r} cannot be saved as .safetensors: PyTorch's int8 layers "
                          "keep packed parameters, not plain tensors; export it as onnx, or export "
                          "the float variant as safetensors")
    model, data, cfg = loaded if loaded is not None else load_run_model(store, run_id, phase)
    meta = model_card(cfg, phase, data, run_id=int(run_id), variant=variant)
    base = prune_magnitude(model, share, scope="global") if share else model
    stem = f"run{int(run_id)}_{phase}_{_slug(variant)}"
    res = ExportResult(int(run_id), phase, variant)
    if "onnx" in formats:
        onnx_bytes = export_onnx(base, tuple(data.in_shape), metadata=meta)
        if int8:
            onnx_bytes = quantize_onnx_int8(onnx_bytes)
        res.files[f"{stem}.onnx"] = onnx_bytes
        if verify:
            reference = variant_model(model, variant)
            res.verification = verify_onnx(onnx_bytes, reference, data.x_test, data.y_test)
    if "safetensors" in formats:
        res.files[f"{stem}.safetensors"] = safetensors_bytes(base.state_dict(), meta)
    return res
