"""rli2it_vision: the RL-I2IT agent core applied to vision tasks.

Each task reuses :mod:`rli2it_med.agent` and supplies only an environment, networks and losses:

- :mod:`rli2it_vision.digits`: DigitsTransform on MNIST (the registration environment on 28x28 digits);
- :mod:`rli2it_vision.editing`: the image-editing environment of inpainting and translation (the action is the next
  image or the hole's content, the reward the PSNR gained), with :mod:`rli2it_vision.data` (offline faces, image
  folders, video frames), :mod:`rli2it_vision.inpainting` and :mod:`rli2it_vision.translation`;
- :mod:`rli2it_vision.style`: neural style transfer on the same environment (the reward is the drop of the style
  loss, :mod:`rli2it_vision.perceptual` holds the losses), and :mod:`rli2it_vision.video`: its step-wise and
  frame-wise GRU memory for video.
"""
