# Cityscapes (scored by mIoU): mmseg's PSPNet R50-D8, whole-image inference, with the prediction step
# switched from argmax to IoU-optimal RankSEG. Checkpoint from mmseg's model zoo:
# https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r50-d8_512x1024_80k_cityscapes/pspnet_r50-d8_512x1024_80k_cityscapes_20200606_112131-2376f12b.pth
_base_ = ['mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmseg_ext'], allow_failed_imports=False)
model = dict(test_cfg=dict(decoder='rankseg', rankseg=dict(metric='iou')))
