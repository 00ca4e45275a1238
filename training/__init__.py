"""Fine-tuning Mask R-CNN's person heads on COCO 2014's central-person subset: ``python -m training``."""
