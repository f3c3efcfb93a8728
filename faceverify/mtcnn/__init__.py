"""MTCNN's three-stage cascade on ONNX Runtime, without torch: the pyramid and stage-2/3 crops resampled from
integral images (:mod:`.crops`), box arithmetic and NMS in numpy and OpenCV (:mod:`.boxes`), the stages run in
batches (:mod:`.cascade`)."""
