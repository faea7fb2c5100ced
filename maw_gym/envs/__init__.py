"""Gymnasium environments for routing MAW attention depths (registered by ``import maw_gym``).

``base`` holds what every variant shares; each variant module holds its single env, and
``vector`` the native vector envs. Modules import only numpy and gymnasium (tables are loaded,
and torch imported, only when an env is built without ``tables=``).
"""
