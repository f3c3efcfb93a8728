"""YuNet on ONNX Runtime: the shipped ONNX file made to take any input size (the detector itself is
``faceverify.detect.YuNetDetector``)."""
