from mriad.cli import app

app(prog_name="mriad")
