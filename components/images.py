"""Container images the components run in on Kubeflow (built from images/)."""

import os

#: Image with kubetrade and its CPU dependencies baked in (images/base/Dockerfile).
BASE_IMAGE = os.environ.get("KUBETRADE_BASE_IMAGE", "kubetrade/base:0.1.0")
#: CUDA image for training steps (images/trainer/Dockerfile).
TRAINER_IMAGE = os.environ.get("KUBETRADE_TRAINER_IMAGE", "kubetrade/trainer:0.1.0")
#: kubetrade without kfp plus the Katib SDK (images/tuner/Dockerfile; protobuf<5 cannot share
#: an environment with kfp). The pipeline drives Katib through the kubernetes client and does
#: not need it; it is for running the Katib SDK (e.g. its UI helpers) beside kubetrade.
TUNER_IMAGE = os.environ.get("KUBETRADE_TUNER_IMAGE", "kubetrade/tuner:0.1.0")
