#!/usr/bin/env python3
"""Pull an image through containerd's CRI plugin, as the kubelet does.

Usage: cri_pull.py CONTAINERD_SOCKET IMAGE GENERATED_DIR

Compiles cri_image_subset.proto into GENERATED_DIR, calls runtime.v1.ImageService/PullImage and
then ImageStatus, and prints one JSON object: {"image_ref", "id", "repo_tags", "repo_digests"}.
On error prints the gRPC status and exits 1.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "cri_image_subset.proto"


def compile_proto(out_dir):
    from grpc_tools import protoc

    os.makedirs(out_dir, exist_ok=True)
    rc = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", os.path.join(HERE, PROTO)])
    if rc != 0:
        raise RuntimeError(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    socket, image, out_dir = sys.argv[1:]
    compile_proto(out_dir)
    import grpc
    import cri_image_subset_pb2 as pb
    import cri_image_subset_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        try:
            pulled = stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=90)
            status = stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image)), timeout=30)
        except grpc.RpcError as e:
            print(f"gRPC {e.code().name}: {e.details()}")
            return 1
    print(json.dumps({
        "image_ref": pulled.image_ref,
        "id": status.image.id,
        "repo_tags": list(status.image.repo_tags),
        "repo_digests": list(status.image.repo_digests),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
