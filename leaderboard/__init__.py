"""Composition roots: the ``maw-gym`` command (``cli``) and the leaderboard (``run``).

They sit above both packages: they may import the core ``maw_gym`` and the routers in
``maw_gym_agents``; neither of those imports this package.
"""
