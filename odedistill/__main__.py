"""``python -m odedistill`` runs the command line."""

from odedistill.cli import main

if __name__ == "__main__":
    main()
