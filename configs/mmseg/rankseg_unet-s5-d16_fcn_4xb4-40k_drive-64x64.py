# Retinal vessel segmentation (DRIVE, scored by mDice): mmseg's UNet-S5-D16 + FCN, slide inference,
# with the prediction step switched from argmax to Dice-optimal RankSEG. Checkpoint from mmseg's model zoo:
# https://download.openmmlab.com/mmsegmentation/v0.5/unet/fcn_unet_s5-d16_64x64_40k_drive/fcn_unet_s5-d16_64x64_40k_drive_20201223_191051-5daf6d3b.pth
_base_ = ['mmseg::unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py']
custom_imports = dict(imports=['mmseg_ext'], allow_failed_imports=False)
model = dict(test_cfg=dict(decoder='rankseg', rankseg=dict(metric='dice')))
