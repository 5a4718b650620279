"""The v2 tensors → raw-feature columns of both peer runtimes (MLServer's and KServe's), without either installed."""

from scripts.bench.peers.columns import tensor_columns


def test_bytes_numbers_nested_data_and_multi_valued_rows():
    columns = tensor_columns(
        [
            ("user_id", "BYTES", [2, 1], [[b"196"], ["186"]]),  # nested [B, 1], bytes or str
            ("age", "FP64", [2], [49.0, 31.5]),
            ("genres", "BYTES", [2, 2], [b"Drama", b"", "Comedy", "War"]),  # [B, K]: one list per row
            ("one", "FP64", [1], 3.0),  # a scalar
        ]
    )
    assert columns == {
        "user_id": ["196", "186"],
        "age": [49.0, 31.5],
        "genres": [["Drama", ""], ["Comedy", "War"]],
        "one": [3.0],
    }
