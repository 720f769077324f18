from labcli.cli import main

main()
