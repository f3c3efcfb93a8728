"""The package keeps its shape (tools/check_layers.py): no module over 450 lines, no folder over 12 modules, no
import up a layer, no import cycle."""

from __future__ import annotations

from tools.check_layers import main


def test_the_package_keeps_its_layers(capsys):
    code = main()
    assert code == 0, capsys.readouterr().out
