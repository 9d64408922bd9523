// Loaded by the first cell of every notebook: `#load "lib/setup.csx"`. Paths are relative to this
// file; notebooks/lib/bin is built by `dotnet build` (see docs-notebooks.md).
#r "bin/TorchSharp.dll"
#r "bin/Lasp2.Reference.dll"
#r "bin/Lasp2.Research.dll"
#r "bin/Lasp2.Charts.dll"
#r "bin/Lasp2.Notebooks.dll"
#r "bin/Microsoft.Data.Analysis.dll"
#r "bin/FsCheck.dll"

using Microsoft.DotNet.Interactive.Formatting;
using static Microsoft.DotNet.Interactive.Kernel;

// Charts and tables render as HTML in the cell.
Formatter.Register<Lasp2.Charts.Figure>((figure, writer) => writer.Write(figure.ToNotebookHtml()), "text/html");
Formatter.Register<Lasp2.Notebooks.Table>((table, writer) => writer.Write(table.ToHtml()), "text/html");
Formatter.Register<Microsoft.Data.Analysis.DataFrame>((frame, writer) => writer.Write(Lasp2.Notebooks.Table.Of(frame).ToHtml()), "text/html");
// plotly.js once per notebook (compressed); every chart below waits for it.
display(HTML(Lasp2.Charts.NotebookPlotly.Loader()));
