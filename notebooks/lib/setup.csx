// Loaded by the first cell of every notebook: `#load "lib/setup.csx"`. Paths are relative to this
// file; notebooks/lib/bin is built by `dotnet build` (see environment.md, "Notebooks: set-up").
#r "bin/TorchSharp.dll"
#r "bin/Lasp2.Reference.dll"
#r "bin/Lasp2.Research.dll"
#r "bin/Lasp2.Charts.dll"
#r "bin/Lasp2.Notebooks.dll"
#r "bin/Microsoft.Data.Analysis.dll"
#r "bin/FsCheck.dll"

using Microsoft.DotNet.Interactive;
using Microsoft.DotNet.Interactive.Formatting;
using static Microsoft.DotNet.Interactive.Kernel;   // display(...)

// Charts and tables render as HTML in the cell.
Formatter.Register<Lasp2.Charts.Figure>((figure, writer) => writer.Write(figure.ToNotebookHtml()), "text/html");
Formatter.Register<Lasp2.Notebooks.Table>((table, writer) => writer.Write(table.ToHtml()), "text/html");
Formatter.Register<Microsoft.Data.Analysis.DataFrame>((frame, writer) => writer.Write(Lasp2.Notebooks.Table.Of(frame).ToHtml()), "text/html");
// plotly.js once per notebook (compressed); every chart below waits for it. DisplayAs, not Kernel.HTML:
// HTML returns an IHtmlContent, and binding it makes the compiler unify the Microsoft.AspNetCore.Html.Abstractions
// 2.3.0.0 that Microsoft.DotNet.Interactive was built against with the kernel's 10.0.0.0 (warning CS1701 on stderr).
Lasp2.Charts.NotebookPlotly.Loader().DisplayAs("text/html");
