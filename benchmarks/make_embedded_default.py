"""Build the files of `milpverify/data/` from `../shared/data` (run from the repository root).

(a) copies Planet LeNet (`nets/mnist/planet/lenet.onnx`, MIT) to `planet_lenet.onnx` and the
    first 10 MNIST test images and labels to `mnist_test_first10.npz`;
(b) trains a tiny MLP 784-32-16-10 (torch, seeded, CPU, about 10 s) on MNIST *test* images
    2000-9999 (the training set is not available offline), exports it with `onnx.helper` as
    `mnist_mlp_32_16.onnx` (Flatten, Gemm, Relu, Gemm, Relu, Gemm; opset 13; batch axis "N";
    input pixels/255) and reports its accuracy on test images 0-999, which it never saw.

    python benchmarks/make_embedded_default.py [--shared ../shared/data] [--out milpverify/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
SEED = 0
TRAIN = slice(2000, 10000)
HELD_OUT = slice(0, 1000)


def copy_files(shared: Path, out: Path) -> None:
    """Planet LeNet and the first 10 MNIST test images, byte for byte / value for value."""
    (out / "planet_lenet.onnx").write_bytes((shared / "nets/mnist/planet/lenet.onnx").read_bytes())
    with np.load(shared / "mnist/mnist_test.npz") as data:
        images = data["images"][:10].astype(np.uint8)
        labels = data["labels"][:10].astype(np.int64)
    assert images.shape == (10, 1, 28, 28)
    np.savez_compressed(out / "mnist_test_first10.npz", images=images, labels=labels)


def train_mlp(images: np.ndarray, labels: np.ndarray, *, epochs: int = 15
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Adam on cross-entropy, seeded; returns [(W (out, in), b)] for the three layers."""
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x = torch.tensor(images.reshape(len(images), -1), dtype=torch.float32) / 255.0
    y = torch.tensor(labels, dtype=torch.int64)
    model = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    return [(m.weight.detach().numpy().astype(np.float32).copy(),
             m.bias.detach().numpy().astype(np.float32).copy()) for m in layers]


def mlp_to_onnx(layers: list[tuple[np.ndarray, np.ndarray]], doc: str) -> onnx.ModelProto:
    """Flatten + (Gemm transB=1, Relu)* + Gemm, opset 13, input 'input' [N, 1, 28, 28]."""
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], name="flatten", axis=1)]
    inits, source = [], "flat"
    for k, (w, b) in enumerate(layers, start=1):
        inits += [numpy_helper.from_array(w, f"fc{k}.weight"),
                  numpy_helper.from_array(b, f"fc{k}.bias")]
        out = "logits" if k == len(layers) else f"fc{k}"
        nodes.append(helper.make_node("Gemm", [source, f"fc{k}.weight", f"fc{k}.bias"], [out],
                                      name=f"fc{k}", transB=1))
        source = out
        if k < len(layers):
            nodes.append(helper.make_node("Relu", [out], [f"relu{k}"], name=f"relu{k}"))
            source = f"relu{k}"
    graph = helper.make_graph(
        nodes, "mnist_mlp_32_16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    opsets = [helper.make_opsetid("", 13)]
    model = helper.make_model(graph, opset_imports=opsets, doc_string=doc,
                              producer_name="milpverify benchmarks/make_embedded_default.py")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "milpverify" / "data")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    copy_files(args.shared, args.out)
    with np.load(args.shared / "mnist/mnist_test.npz") as data:
        images, labels = data["images"], data["labels"]
    start = time.perf_counter()
    layers = train_mlp(images[TRAIN], labels[TRAIN], epochs=args.epochs)
    train_s = time.perf_counter() - start

    import onnxruntime as ort
    probe = mlp_to_onnx(layers, "")
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = images.astype(np.float32) / np.float32(255.0)
    pred = session.run(None, {"input": x})[0].argmax(axis=1)
    held_out = int((pred[HELD_OUT] == labels[HELD_OUT]).sum())
    train_acc = float((pred[TRAIN] == labels[TRAIN]).mean())
    doc = (f"MLP 784-32-16-10, ReLU; input pixels/255, no mean/std. Trained with "
           f"benchmarks/make_embedded_default.py (torch {torch.__version__}, seed {SEED}, "
           f"{args.epochs} epochs Adam) on MNIST test images 2000-9999. Correct on test images "
           f"0-999 (not trained on): {held_out}/1000.")
    model = mlp_to_onnx(layers, doc)
    path = args.out / "mnist_mlp_32_16.onnx"
    path.write_bytes(model.SerializeToString())
    report = {"file": path.name, "correct_test_0_999": held_out,
              "train_accuracy_2000_9999": round(train_acc, 4), "train_s": round(train_s, 1),
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
