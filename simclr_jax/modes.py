"""The jobs `config.mode` can select, and what each one implies."""

# Modes that train, through the one trainer.
TRAIN_MODES = ('pretrain', 'finetune', 'linear_eval', 'supervised', 'distill')
MODES = TRAIN_MODES + ('eval', 'export')
# Train only on examples inside config.label_fraction.
LABELLED_MODES = ('finetune', 'linear_eval', 'supervised')
# The model carries a supervised head (on projection layer ft_proj_selector).
SUPERVISED_HEAD_MODES = ('finetune', 'linear_eval', 'supervised', 'distill')
# Start from config.init_checkpoint (required).
FROM_CHECKPOINT_MODES = ('finetune', 'linear_eval')
