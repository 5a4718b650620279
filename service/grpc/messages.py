"""The KServe v2 gRPC messages, built from descriptor.py in a private descriptor pool (generate.py says why).

request = ModelInferRequest.FromString(data)      # protobuf message classes, as a generated _pb2 has them
METHODS["ModelInfer"]                             # (request class, response class) of each RPC
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, message_factory

from service.grpc.descriptor import SERIALIZED

SERVICE = "inference.GRPCInferenceService"

_pool = descriptor_pool.DescriptorPool()
_file = _pool.AddSerializedFile(SERIALIZED)


def _message(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest, ServerLiveResponse = _message("ServerLiveRequest"), _message("ServerLiveResponse")
ServerReadyRequest, ServerReadyResponse = _message("ServerReadyRequest"), _message("ServerReadyResponse")
ModelReadyRequest, ModelReadyResponse = _message("ModelReadyRequest"), _message("ModelReadyResponse")
ServerMetadataRequest, ServerMetadataResponse = _message("ServerMetadataRequest"), _message("ServerMetadataResponse")
ModelMetadataRequest, ModelMetadataResponse = _message("ModelMetadataRequest"), _message("ModelMetadataResponse")
ModelInferRequest, ModelInferResponse = _message("ModelInferRequest"), _message("ModelInferResponse")

# every RPC of the service, with its messages (the proto's order)
METHODS = {
    m.name: (_message(m.input_type.name), _message(m.output_type.name))
    for m in _pool.FindServiceByName(SERVICE).methods
}
