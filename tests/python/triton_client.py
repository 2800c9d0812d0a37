#!/usr/bin/env python3
"""A client nobody here wrote: NVIDIA's tritonclient (PyPI `tritonclient[http]`) against `cloister proxy`.

usage: triton_client.py URL MODEL REQUEST.json EXPECTED.json

REQUEST.json is an Open Inference Protocol v2 request body (JSON data); EXPECTED.json maps each output name to
{"shape": [...], "datatype": "FP32", "data": [...]} as in-process tract computed it. The script checks the
server and model are live and ready, reads the model's metadata, runs the request with JSON tensors and with
the binary tensor extension, and compares every output with the expected values exactly. Exit 0 on success;
prints one JSON line of what it did.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64,
          "UINT8": np.uint8, "INT8": np.int8, "BOOL": np.bool_}


def main():
    url, model, request_path, expected_path = sys.argv[1:5]
    request = json.load(open(request_path))
    expected = json.load(open(expected_path))
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model), "model not ready"
    meta = client.get_model_metadata(model)
    assert meta["name"] == model, meta
    ran = []
    for binary in (False, True):
        inputs = []
        for t in request["inputs"]:
            array = np.array(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
            tensor = httpclient.InferInput(t["name"], list(array.shape), t["datatype"])
            tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
        result = client.infer(model, inputs, outputs=outputs)
        for o in meta["outputs"]:
            want = expected[o["name"]]
            got = result.as_numpy(o["name"])
            assert list(got.shape) == want["shape"], (o["name"], got.shape, want["shape"])
            w = np.array(want["data"], dtype=DTYPES[want["datatype"]]).reshape(want["shape"])
            assert got.dtype == w.dtype and np.array_equal(got, w), (o["name"], binary, got.ravel()[:8], w.ravel()[:8])
        ran.append("binary" if binary else "json")
    print(json.dumps({"ok": True, "model": model, "outputs": [o["name"] for o in meta["outputs"]], "ran": ran}))


if __name__ == "__main__":
    main()
