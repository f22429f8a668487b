"""Container images the components run in on Kubeflow (built from images/)."""

import os

#: Image with kubetrade and its CPU dependencies baked in (images/base/Dockerfile).
BASE_IMAGE = os.environ.get("KUBETRADE_BASE_IMAGE", "kubetrade/base:0.1.0")
#: CUDA image for training steps (images/trainer/Dockerfile).
TRAINER_IMAGE = os.environ.get("KUBETRADE_TRAINER_IMAGE", "kubetrade/trainer:0.1.0")
