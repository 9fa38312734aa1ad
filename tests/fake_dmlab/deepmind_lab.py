"""A fake ``deepmind_lab`` module following the public Python API, for tests.

Put this directory on ``sys.path`` (spawned workers inherit it). Each
``Lab`` episode lasts ``fakeEpisodeFrames`` frames (config, default 20);
every frame pays 0.5, so ``step(a, num_steps=4)`` returns 2.0. The
``RGB_INTERLEAVED`` observation ``[height, width, 3]`` uint8 encodes:
row 0, columns 0..6, channel 0: the last action vector + 128; pixel
(1, 0, 0): the last ``num_steps``; (2, 0, 0): frames played this episode;
(3, 0, 0): the reset seed % 256; (4, 0, 0): 1 if the level is
``contributed/dmlab30/...``; (5, 0, 0): 1 if the config has a
``datasetPath``. When asked for ``INSTR`` (the language
levels' instruction), it is ``config['fakeInstruction']`` with ``{colour}``
replaced by one of four colours chosen by the reset seed (default
``'Pick the {colour} object'``), as a str.
"""

import numpy as np


class Lab:

  def __init__(self, level, observations, config=None, renderer='software',
               level_cache=None):
    del level_cache
    config = dict(config or {})
    assert all(isinstance(v, str) for v in config.values()), config
    assert list(observations) in (['RGB_INTERLEAVED'],
                                  ['RGB_INTERLEAVED', 'INSTR']), observations
    self.names = list(observations)
    self.instruction = config.get('fakeInstruction',
                                  'Pick the {colour} object')
    self.level, self.renderer = level, renderer
    self.height, self.width = int(config['height']), int(config['width'])
    self.episode_frames = int(config.get('fakeEpisodeFrames', '20'))
    self.has_dataset = 'datasetPath' in config
    self._frames, self._running = 0, False
    self._last_action = np.zeros(7, np.intc)
    self._last_num_steps, self._seed = 0, 0

  def reset(self, episode=-1, seed=None):
    del episode
    self._seed = 0 if seed is None else int(seed)
    self._frames, self._running = 0, True
    self._last_action[:] = 0
    self._last_num_steps = 0
    return True

  def is_running(self):
    return self._running

  def num_steps(self):
    return self._frames

  def step(self, action, num_steps=1):
    if not self._running:
      raise RuntimeError('step() after the episode ended')
    action = np.asarray(action)
    assert action.dtype == np.intc and action.shape == (7,), action
    self._last_action = action.copy()
    self._last_num_steps = num_steps
    reward = 0.0
    for _ in range(num_steps):
      self._frames += 1
      reward += 0.5
      if self._frames >= self.episode_frames:
        self._running = False
        break
    return reward

  def observations(self):
    if not self._running:
      raise RuntimeError('observations() after the episode ended')
    obs = np.zeros((self.height, self.width, 3), np.uint8)
    obs[0, :7, 0] = self._last_action + 128
    obs[1, 0, 0] = self._last_num_steps
    obs[2, 0, 0] = self._frames % 256
    obs[3, 0, 0] = self._seed % 256
    obs[4, 0, 0] = self.level.startswith('contributed/dmlab30/')
    obs[5, 0, 0] = self.has_dataset
    out = {'RGB_INTERLEAVED': obs}
    if 'INSTR' in self.names:
      colour = ('red', 'green', 'blue', 'yellow')[self._seed % 4]
      out['INSTR'] = self.instruction.replace('{colour}', colour)
    return out

  def close(self):
    self._running = False
