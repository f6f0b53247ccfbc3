"""The desktop app (PyQt6 + pyqtgraph): the only package that imports Qt.

Per widget, data (pure numpy, no Qt) is kept apart from the view: ``mmode_data`` (display
ring, overlay rate) feeds ``mmode_view``, ``measurements`` (caliper math, presets) feeds
``calipers``; ``settings`` persists the user's choices; ``engine_link`` is the only module
that knows the engine's interfaces. ``main_window`` lays out the widgets and composes one
controller per concern (``source_control``, ``review_control``, ``recording_control``,
``export_control``, ``measure_control``, ``cine_control``, ``settings_control``, ``drawing``,
``status_control``);
slow work runs in ``jobs`` workers; ``app`` runs ``mmode gui``.
"""
