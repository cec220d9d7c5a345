# ADE20K (150 classes, scored by mIoU): mmseg's SegFormer MiT-B0, whole-image inference, with the prediction
# step switched from argmax to IoU-optimal RankSEG. Checkpoint from mmseg's model zoo:
# https://download.openmmlab.com/mmsegmentation/v0.5/segformer/segformer_mit-b0_512x512_160k_ade20k/segformer_mit-b0_512x512_160k_ade20k_20210726_101530-8ffa8fda.pth
_base_ = ['mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmseg_ext'], allow_failed_imports=False)
model = dict(test_cfg=dict(decoder='rankseg', rankseg=dict(metric='iou')))
