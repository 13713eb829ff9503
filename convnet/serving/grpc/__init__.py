"""The Open Inference Protocol over gRPC (`convnet serve --grpc-port`); see `service`.

`grpc_predict_v2.proto` is KServe's (docs/predict-api/v2/ of kserve/kserve), as it is, under its
licence; its package `inference` is what every client calls
(`/inference.GRPCInferenceService/ModelInfer`). The `*_pb2*.py*` beside it are generated from it by
`make grpc-code`, never edited.
"""

from convnet.serving.grpc.service import STOP_GRACE, start_server

__all__ = ["STOP_GRACE", "start_server"]
