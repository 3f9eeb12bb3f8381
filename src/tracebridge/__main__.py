"""python -m tracebridge"""

from tracebridge.cli import main

main()
