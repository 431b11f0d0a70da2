import sys

from kdc_trio.cli import main

sys.exit(main())
